//! The ISA-tier loop: a check runs on every fast tier this CPU has; a tier it lacks is reported
//! loudly on stderr, and is a failure when `INTQ_REQUIRE_TIERS` names it, so that CI on a CPU
//! known to have a tier cannot pass without testing it.

use intq_kernels::Isa;
use std::io::Write;
use std::sync::Mutex;

/// The variable naming the tiers (comma- or space-separated, e.g. `amx,avx512vnni,avx2`) that
/// must run: a tier in it that this CPU lacks fails every test that would have run on it.
pub const REQUIRE_TIERS: &str = "INTQ_REQUIRE_TIERS";

/// The tiers `INTQ_REQUIRE_TIERS` names; none when it is unset or empty.
///
/// # Panics
/// On a name that is not a tier, so a typo cannot pass for "nothing required".
pub fn required_tiers() -> Vec<Isa> {
    parse_required(&std::env::var(REQUIRE_TIERS).unwrap_or_default())
}

fn parse_required(v: &str) -> Vec<Isa> {
    v.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<Isa>()
                .unwrap_or_else(|e| panic!("{REQUIRE_TIERS}={v:?}: {e}"))
        })
        .collect()
}

/// Whether `check` runs on `isa` here: true when the CPU has it. A missing tier is reported on
/// stderr, once per tier in a process.
///
/// # Panics
/// When the CPU lacks `isa` and `INTQ_REQUIRE_TIERS` names it.
pub fn tier_runs(isa: Isa, check: &str) -> bool {
    tier_runs_given(isa, check, &required_tiers())
}

fn tier_runs_given(isa: Isa, check: &str, required: &[Isa]) -> bool {
    if isa.is_available() {
        return true;
    }
    if required.contains(&isa) {
        panic!(
            "{REQUIRE_TIERS} requires ISA tier {isa}, but this CPU lacks it, so {check} cannot \
             run on it (this CPU has: {})",
            names(&Isa::available())
        );
    }
    // Once per tier and process, written to the process's stderr directly: the test harness
    // captures `eprintln!` of passing tests, and a skip must show in every run's log.
    static REPORTED: Mutex<Vec<Isa>> = Mutex::new(Vec::new());
    let mut reported = REPORTED.lock().unwrap_or_else(|e| e.into_inner());
    if !reported.contains(&isa) {
        reported.push(isa);
        let _ = writeln!(
            std::io::stderr(),
            "!!! SKIPPED ISA tier {isa} (first in {check}): this CPU lacks it; the tier tests \
             run on {} !!!",
            names(&Isa::available())
        );
    }
    false
}

/// The fast tiers `check` runs on: every tier this CPU has, best first (see [`tier_runs`]).
pub fn tiers(check: &str) -> Vec<Isa> {
    Isa::ALL_BEST_FIRST
        .into_iter()
        .filter(|&isa| tier_runs(isa, check))
        .collect()
}

/// Runs `body` on every fast tier this CPU has, best first (see [`tier_runs`]).
pub fn on_every_tier(check: &str, mut body: impl FnMut(Isa)) {
    for isa in tiers(check) {
        body(isa);
    }
}

fn names(tiers: &[Isa]) -> String {
    tiers
        .iter()
        .map(|i| i.name())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_available_tier_runs_and_portable_always_does() {
        let got = tiers("tiers_self_test");
        assert_eq!(got, Isa::available());
        assert!(got.contains(&Isa::Portable));
    }

    #[test]
    fn required_names_parse_and_a_typo_fails() {
        assert_eq!(parse_required(""), vec![]);
        assert_eq!(
            parse_required("amx,avx512vnni avx2, portable"),
            vec![Isa::Amx, Isa::Avx512Vnni, Isa::Avx2, Isa::Portable]
        );
        let err = std::panic::catch_unwind(|| parse_required("avx2,avx9")).unwrap_err();
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains(REQUIRE_TIERS) && msg.contains("avx9"), "{msg}");
    }

    #[test]
    fn a_required_missing_tier_fails_with_its_name() {
        // Every CPU lacks the other architecture's tiers.
        let missing = Isa::ALL_BEST_FIRST
            .into_iter()
            .find(|i| !i.is_available())
            .expect("no CPU has both x86 and aarch64 tiers");
        assert!(!tier_runs_given(missing, "the self test", &[Isa::Portable]));
        let err = std::panic::catch_unwind(|| {
            tier_runs_given(missing, "the self test", &[Isa::Portable, missing])
        })
        .expect_err("a required missing tier must fail");
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            msg.contains(REQUIRE_TIERS)
                && msg.contains(missing.name())
                && msg.contains("the self test"),
            "{msg}"
        );
    }
}
