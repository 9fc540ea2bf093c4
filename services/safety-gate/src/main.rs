//! `selfheal-safety-gate`: the safety-gate service on its own (compose stack, Kubernetes).

fn main() -> std::process::ExitCode {
    selfheal_service::service_main::<selfheal_safety_gate::Config, _, _, _>(
        "selfheal-safety-gate",
        "Decides whether a candidate fix may ship: builds and tests it in a sandboxed worktree, replays failing requests, applies policy, scores risk.",
        selfheal_safety_gate::run,
    )
}
