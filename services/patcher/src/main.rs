//! `selfheal-patcher`: the patcher service on its own (compose stack, Kubernetes).

fn main() -> std::process::ExitCode {
    selfheal_service::service_main::<selfheal_patcher::Config, _, _, _>(
        "selfheal-patcher",
        "Generates candidate fixes as unified diffs: fix templates, partial and full reverts, mutations, and an optional LLM provider.",
        selfheal_patcher::run,
    )
}
