//! The `selfheal` command: runs the whole mesh in one process (`selfheal up`) and is the
//! client for people (`selfheal status`, `selfheal incidents`, `selfheal load`,
//! `selfheal audit verify`, `selfheal explain`). `selfheal demo` runs the whole loop on the
//! embedded default.
//!
//! In one process every service still listens on its own port and reaches the others over
//! real gRPC, exactly as in the compose stack: one code path.

pub mod audit;
pub mod demo;
pub mod incidents;
pub mod inject;
pub mod load;
pub mod mesh;
pub mod status;
