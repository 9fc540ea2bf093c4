//! Faults in selfheal's own processes: an orchestrator that restarts mid-saga or crashes holding
//! a lease, and a deployer that crashes mid-canary.

use std::path::Path;

use super::Judged;

/// The scenarios this module runs.
pub(super) const BUILT: &[&str] = &[];

/// The injection and judgement of `name`, when this module owns it.
pub(super) fn judge(name: &str, work: &Path) -> Option<Judged> {
    let _ = (name, work);
    None
}
