/**
 * Distributed group forking, node side: which super nodes own a member's location key (the same
 * placement the replicated location store uses), for the proxy's `owners` hook.
 */
import type { OverlayNode, PeerId } from '@sipring/overlay'
import { aorKey, type ReplicaValue } from './replication.js'

/**
 * `owners(aor)`: the owners of `aor|<aor>` on this node's current ring, in ring order (the store's
 * `owners(key)`: R distinct successors), keeping this node and the members SWIM holds alive or
 * suspect. The first one forks to the member; the next ones are its replicas, tried when it fails.
 */
export function ownerResolver (overlay: Pick<OverlayNode<ReplicaValue>, 'store' | 'membership' | 'self'>): (aor: string) => PeerId[] {
  return aor => overlay.store.owners(aorKey(aor)).filter(id => {
    if (id === overlay.self) return true
    const status = overlay.membership.get(id)?.status
    return status === 'alive' || status === 'suspect'
  })
}
