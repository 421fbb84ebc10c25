//! yinyi-api (to be built in the public-API issue): the `.proto` files under
//! `api/proto/yinyi/v1/` (PaymentService, HisService, TerminalService, AdminService), the tonic
//! code generated from them, the mapping of ledger rejections to gRPC codes with the reason code
//! in a structured detail, and the client library that follows the leader and retries with the
//! same request id.
//!
//! Nothing is exported yet: today the node serves only its internal Raft service
//! (`yinyi-consensus`), which `yinyi ctl` and the tests use.
