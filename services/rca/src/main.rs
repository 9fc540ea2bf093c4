//! `selfheal-rca`: the rca service on its own (compose stack, Kubernetes).

fn main() -> std::process::ExitCode {
    selfheal_service::service_main::<selfheal_rca::Config, _, _, _>(
        "selfheal-rca",
        "Root-cause analysis over the dependency graph, and code localisation: stack trace to file:line to culprit commit.",
        selfheal_rca::run,
    )
}
