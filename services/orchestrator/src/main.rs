//! `selfheal-orchestrator`: the saga orchestrator on its own (compose stack, Kubernetes).

fn main() -> std::process::ExitCode {
    selfheal_service::service_main::<selfheal_orchestrator::Config, _, _, _>(
        "selfheal-orchestrator",
        "Runs one saga per incident: locks the service, calls detector, rca, patcher, safety-gate, \
         deployer and audit step by step, compensates on failure and escalates to a human.",
        selfheal_orchestrator::run,
    )
}
