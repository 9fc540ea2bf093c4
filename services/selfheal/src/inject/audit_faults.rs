//! Faults in the audit trail: a store that goes away mid-saga, and a stored record altered.

use std::path::Path;

use super::Judged;

/// The scenarios this module runs.
pub(super) const BUILT: &[&str] = &[];

/// The injection and judgement of `name`, when this module owns it.
pub(super) fn judge(name: &str, work: &Path) -> Option<Judged> {
    let _ = (name, work);
    None
}
