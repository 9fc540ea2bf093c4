//! The gRPC contracts of the selfheal mesh, generated at build time from `proto/selfheal/v1`.
//!
//! This crate holds generated code only. Services convert these types to their own domain
//! types at the edge (`grpc.rs` in each service) so that domain code never sees prost or tonic.

#![allow(unreachable_pub, missing_docs, clippy::all, clippy::pedantic)]

/// Package `selfheal.v1`.
pub mod v1 {
    tonic::include_proto!("selfheal.v1");
}

/// The encoded `FileDescriptorSet` of every selfheal proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/selfheal_descriptor.bin"));

/// Fully qualified gRPC service names, as reflection and health report them.
pub mod service_names {
    pub const ORCHESTRATOR: &str = "selfheal.v1.Orchestrator";
    pub const DETECTOR: &str = "selfheal.v1.Detector";
    pub const RCA: &str = "selfheal.v1.Rca";
    pub const PATCHER: &str = "selfheal.v1.Patcher";
    pub const SAFETY_GATE: &str = "selfheal.v1.SafetyGate";
    pub const DEPLOYER: &str = "selfheal.v1.Deployer";
    pub const AUDIT: &str = "selfheal.v1.Audit";
}
