//! `selfheal-deployer`: the deployer service on its own (compose stack, Kubernetes).

fn main() -> std::process::ExitCode {
    selfheal_service::service_main::<selfheal_deployer::Config, _, _, _>(
        "selfheal-deployer",
        "Runs versions of target services behind a weighted router and shifts traffic in canary steps with analysis and automatic rollback.",
        selfheal_deployer::run,
    )
}
