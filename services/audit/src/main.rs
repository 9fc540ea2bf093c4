//! `selfheal-audit`: the audit service on its own (compose stack, Kubernetes).

fn main() -> std::process::ExitCode {
    selfheal_service::service_main::<selfheal_audit::Config, _, _, _>(
        "selfheal-audit",
        "The append-only, hash-chained audit trail of every saga step and decision, with verification and decision reports.",
        selfheal_audit::run,
    )
}
