//! Faults in the healed target: a canary that crashes, one that leaks memory, and a fix that passes
//! its canary but not verification once it serves all traffic.

use std::path::Path;

use super::Judged;

/// The scenarios this module runs.
pub(super) const BUILT: &[&str] = &[];

/// The injection and judgement of `name`, when this module owns it.
pub(super) fn judge(name: &str, work: &Path) -> Option<Judged> {
    let _ = (name, work);
    None
}
