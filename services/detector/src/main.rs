//! `selfheal-detector`: the detector service on its own (compose stack, Kubernetes).

fn main() -> std::process::ExitCode {
    selfheal_service::service_main::<selfheal_detector::Config, _, _, _>(
        "selfheal-detector",
        "Turns metrics and alerts into incidents: scrapes /metrics, accepts Alertmanager webhooks, opens, deduplicates and resolves incidents.",
        selfheal_detector::run,
    )
}
