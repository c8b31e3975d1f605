import './polyfill.js'
export { libp2pOverlay, Libp2pOverlay, DHT_PROTOCOL, LOOPBACK_ALLOW, type Libp2pOverlayInit, type Libp2pOverlayEvents } from './node.js'
export {
  Libp2pOverlayNetwork, OverlayBusyError, OVERLAY_PROTOCOL, DEFAULT_NETWORK_LIMITS,
  type OverlayNetworkLimits, type OverlayNetworkStats, type OverlayHost, type Libp2pOverlayNetworkComponents
} from './network.js'
export { encodeFrame, decodePayload, rawFrame, jsonDepthExceeds, DEFAULT_MAX_DEPTH, FrameDecoder, FrameError, DEFAULT_MAX_FRAME_SIZE, FRAME_HEADER, type Frame, type BadMessage } from './codec.js'
export { loadOrCreatePrivateKey, IdentityError } from './identity.js'
export { ed25519Signer, type NodeSigner } from './signer.js'
export { gateService, type GateStats, type ServiceGateInit } from './gate.js'
export { Admission, ADMIT_PROTOCOL, type AdmissionGate, type AdmissionInit, type AdmissionStats, type AdmissionHost } from './admission.js'
export {
  issueCredential, verifyCredential, parseCredential, parseCorePublicKey, encodePublicKey, credentialPayload, createCoreKey, loadCoreKey,
  peerIdOfKeyFile, CredentialError, CREDENTIAL_TYPE, CREDENTIAL_DOMAIN, MAX_CREDENTIAL_SIZE, type OverlayCredential, type CredentialErrorCode
} from './credential.js'
