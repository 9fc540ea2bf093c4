//! Files a saga is about to change: two sagas whose candidates touch the same files of one
//! repository are serialised before deploying (the second waits until the first ends).

use std::collections::BTreeSet;
use std::sync::Mutex;

use tokio::sync::Notify;

#[derive(Debug)]
struct Claim {
    saga_id: String,
    repository: String,
    files: BTreeSet<String>,
}

/// Claims of running sagas.
#[derive(Debug, Default)]
pub(crate) struct FileClaims {
    claims: Mutex<Vec<Claim>>,
    released: Notify,
}

impl FileClaims {
    /// The saga holding a claim that overlaps `files` of `repository`, other than `saga_id`.
    fn blocker(&self, saga_id: &str, repository: &str, files: &BTreeSet<String>) -> Option<String> {
        let claims = self.claims.lock().expect("claims lock is never poisoned");
        claims
            .iter()
            .find(|claim| {
                claim.saga_id != saga_id
                    && claim.repository == repository
                    && !claim.files.is_disjoint(files)
            })
            .map(|claim| claim.saga_id.clone())
    }

    /// Claims `files` for `saga_id`, waiting while another saga holds any of them. `waiting` is
    /// called once per saga it waits for.
    pub(crate) async fn claim(
        &self,
        saga_id: &str,
        repository: &str,
        files: BTreeSet<String>,
        mut waiting: impl FnMut(&str),
    ) {
        let mut announced = None;
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            match self.blocker(saga_id, repository, &files) {
                None => break,
                Some(blocker) => {
                    if announced.as_ref() != Some(&blocker) {
                        waiting(&blocker);
                        announced = Some(blocker);
                    }
                }
            }
            released.await;
        }
        self.claims
            .lock()
            .expect("claims lock is never poisoned")
            .push(Claim {
                saga_id: saga_id.to_owned(),
                repository: repository.to_owned(),
                files,
            });
    }

    /// Drops every claim of `saga_id` and wakes the sagas waiting for them.
    pub(crate) fn release(&self, saga_id: &str) {
        self.claims
            .lock()
            .expect("claims lock is never poisoned")
            .retain(|claim| claim.saga_id != saga_id);
        self.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn files(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[tokio::test]
    async fn overlapping_files_of_one_repository_wait_for_the_holder() {
        let claims = Arc::new(FileClaims::default());
        claims
            .claim("a", "/repo", files(&["src/lib.rs"]), |_| {})
            .await;
        // Other files, or another repository: no wait.
        claims
            .claim("b", "/repo", files(&["src/main.rs"]), |_| {})
            .await;
        claims
            .claim("c", "/other", files(&["src/lib.rs"]), |_| {})
            .await;

        let waiter = {
            let claims = claims.clone();
            tokio::spawn(async move {
                let mut waited_for = Vec::new();
                claims
                    .claim("d", "/repo", files(&["src/lib.rs", "x.rs"]), |b| {
                        waited_for.push(b.to_owned())
                    })
                    .await;
                waited_for
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "d waits while a holds src/lib.rs");
        claims.release("a");
        let waited_for = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("d proceeds once a released")
            .unwrap();
        assert_eq!(waited_for, ["a"]);
    }
}
