//! Faults in the inputs: a flapping alert, and a failure whose root cause is downstream of the
//! services that show it.

use std::path::Path;

use super::Judged;

/// The scenarios this module runs.
pub(super) const BUILT: &[&str] = &[];

/// The injection and judgement of `name`, when this module owns it.
pub(super) fn judge(name: &str, work: &Path) -> Option<Judged> {
    let _ = (name, work);
    None
}
