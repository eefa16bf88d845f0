//! Reading a guest's serial console: PASS only if `/init` printed the PASS
//! marker with this run's nonce, every test binary reported `test result: ok`,
//! and the kernel neither panicked nor hung.

use std::fmt;

/// The outcome of one kernel.
pub enum Verdict {
    /// Every test binary ran and passed.
    Pass,
    /// Something failed; the reason says what.
    Fail(String),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Pass => write!(f, "PASS"),
            Verdict::Fail(reason) => write!(f, "FAIL ({reason})"),
        }
    }
}

/// What the console showed.
pub struct Reading {
    /// Pass or fail, with the first reason found.
    pub verdict: Verdict,
    /// Tests passed, summed over the `test result:` lines.
    pub passed: u64,
    /// Tests failed, summed over the `test result:` lines.
    pub failed: u64,
    /// Whether a BPF program was rejected by the verifier.
    pub verifier_rejected: bool,
}

/// Judges a console transcript; `nonce` is the run's marker nonce.
pub fn read(serial: &str, nonce: &str, timed_out: bool) -> Reading {
    let pass_marker = format!("NODEMESH-VM: RESULT PASS {nonce}");
    let fail_marker = format!("NODEMESH-VM: RESULT FAIL {nonce}");
    let mut passed = 0;
    let mut failed = 0;
    let mut results = 0;
    let mut binaries = 0;
    let mut failed_binaries = Vec::new();
    let mut running = None;
    for line in serial.lines() {
        if let Some(name) = line.strip_prefix("NODEMESH-VM: running ") {
            running = Some(name.trim());
        }
        if let Some(rest) = line.trim_start().strip_prefix("test result: ") {
            results += 1;
            passed += count(rest, " passed");
            failed += count(rest, " failed");
        }
        if let Some(rest) = line.strip_prefix("NODEMESH-VM: ")
            && let Some((name, rc)) = rest.split_once(" exited with ")
        {
            binaries += 1;
            running = None;
            if rc.trim() != "0" {
                failed_binaries.push(name.to_owned());
            }
        }
    }
    let verifier_rejected = is_verifier_rejection(serial);
    let verdict = if serial.contains("Kernel panic") {
        Verdict::Fail("kernel panic".into())
    } else if timed_out {
        match running {
            Some(test) => Verdict::Fail(format!("timed out, guest hung in {test}")),
            None => Verdict::Fail("timed out, guest hung".into()),
        }
    } else if serial.lines().any(|l| l == fail_marker) {
        if verifier_rejected {
            Verdict::Fail("verifier rejected a program".into())
        } else if failed_binaries.is_empty() {
            Verdict::Fail("guest setup failed".into())
        } else {
            Verdict::Fail(format!("tests failed in {}", failed_binaries.join(", ")))
        }
    } else if !serial.lines().any(|l| l == pass_marker) {
        Verdict::Fail("no result marker: the guest stopped early".into())
    } else if binaries == 0 || results < binaries || failed > 0 {
        Verdict::Fail("the tests' own summaries do not show success".into())
    } else {
        // A verifier log in a passing run comes from a feature probe the tests expected to fail.
        Verdict::Pass
    };
    Reading {
        verdict,
        passed,
        failed,
        verifier_rejected,
    }
}

/// Whether the transcript shows a `BPF_PROG_LOAD` refused by the verifier
/// (aya's `ProgramError::LoadError` prints the verifier's log after "Verifier output").
fn is_verifier_rejection(serial: &str) -> bool {
    serial.lines().any(is_verifier_line)
}

/// Whether the verifier's refusal of `program` is in the transcript: a
/// verifier log starting on the line that names the program or the next one.
pub fn rejected_by_name(serial: &str, program: &str) -> bool {
    let lines: Vec<&str> = serial.lines().collect();
    lines.iter().enumerate().any(|(i, line)| {
        line.contains(program)
            && (is_verifier_line(line) || lines.get(i + 1).is_some_and(|l| is_verifier_line(l)))
    })
}

/// A line that starts a verifier log.
fn is_verifier_line(line: &str) -> bool {
    line.contains("Verifier output") || line.contains("verifier log:")
}

/// For every rejected program in a transcript: the line naming it and the
/// end of the verifier's log, where the verifier says why it refused.
pub fn verifier_excerpt(serial: &str) -> Vec<&str> {
    const TAIL: usize = 8;
    let lines: Vec<&str> = serial.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if !is_verifier_line(lines[i]) {
            i += 1;
            continue;
        }
        // The log ends with the verifier's statistics ("processed N insns ...").
        let end = (i..lines.len().min(i + 100_000))
            .find(|&j| lines[j].contains("processed ") && lines[j].contains(" insns"))
            .unwrap_or_else(|| (i + TAIL).min(lines.len() - 1));
        out.push(lines[i]);
        let from = (i + 1).max(end.saturating_sub(TAIL));
        if from > i + 1 {
            out.push("    ...");
        }
        out.extend(&lines[from..=end]);
        i = end + 1;
    }
    out
}

/// The number before `what` in a `test result:` summary (`ok. 3 passed; 0 failed; ...`).
fn count(summary: &str, what: &str) -> u64 {
    summary
        .split(';')
        .find(|part| part.contains(what))
        .and_then(|part| part.split_whitespace().rev().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &str = "n123";

    fn transcript(body: &str, marker: &str) -> String {
        format!("NODEMESH-VM: kernel 6.1\n{body}\nNODEMESH-VM: RESULT {marker} {NONCE}\n")
    }

    #[test]
    fn passing_run() {
        let s = transcript(
            "running 3 tests\ntest result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.05s\nNODEMESH-VM: smoke-1 exited with 0",
            "PASS",
        );
        let r = read(&s, NONCE, false);
        assert!(matches!(r.verdict, Verdict::Pass));
        assert_eq!((r.passed, r.failed), (3, 0));
    }

    #[test]
    fn marker_needs_the_nonce() {
        let s = "test result: ok. 1 passed; 0 failed;\nNODEMESH-VM: a exited with 0\nNODEMESH-VM: RESULT PASS other\n";
        assert!(matches!(read(s, NONCE, false).verdict, Verdict::Fail(_)));
    }

    #[test]
    fn panic_fails_even_with_marker() {
        let s = transcript(
            "test result: ok. 1 passed; 0 failed;\nNODEMESH-VM: a exited with 0\nKernel panic - not syncing: oops",
            "PASS",
        );
        assert!(matches!(read(&s, NONCE, false).verdict, Verdict::Fail(r) if r == "kernel panic"));
    }

    #[test]
    fn failing_test_is_named() {
        let s = transcript(
            "test result: FAILED. 2 passed; 1 failed; 0 ignored;\nNODEMESH-VM: smoke-1 exited with 101",
            "FAIL",
        );
        let r = read(&s, NONCE, false);
        assert!(matches!(&r.verdict, Verdict::Fail(reason) if reason.contains("smoke-1")));
        assert_eq!((r.passed, r.failed), (2, 1));
    }

    #[test]
    fn expected_probe_failure_does_not_fail_a_passing_run() {
        let s = transcript(
            "probe: Verifier output: unknown func\ntest result: ok. 1 passed; 0 failed;\nNODEMESH-VM: a exited with 0",
            "PASS",
        );
        let r = read(&s, NONCE, false);
        assert!(r.verifier_rejected);
        assert!(matches!(r.verdict, Verdict::Pass));
    }

    #[test]
    fn hang_names_the_running_test() {
        let s =
            "NODEMESH-VM: running a-1\nNODEMESH-VM: a-1 exited with 0\nNODEMESH-VM: running b-2\n";
        assert!(matches!(read(s, NONCE, true).verdict, Verdict::Fail(r) if r.ends_with("in b-2")));
    }

    #[test]
    fn hang_without_marker() {
        assert!(
            matches!(read("booting\n", NONCE, true).verdict, Verdict::Fail(r) if r.contains("timed out"))
        );
        assert!(
            matches!(read("booting\n", NONCE, false).verdict, Verdict::Fail(r) if r.contains("no result marker"))
        );
    }

    #[test]
    fn verifier_rejection_is_recognised() {
        let s = transcript(
            "Error: the BPF_PROG_LOAD syscall returned Permission denied (os error 13). Verifier output: 0: (61) r2 = *(u32 *)(r1 +4096)\ninvalid bpf_context access off=4096 size=4\nNODEMESH-VM: smoke-1 exited with 101",
            "FAIL",
        );
        let r = read(&s, NONCE, false);
        assert!(r.verifier_rejected);
        assert!(matches!(r.verdict, Verdict::Fail(reason) if reason.contains("verifier")));
        assert!(!verifier_excerpt(&s).is_empty());
        assert!(!rejected_by_name(&s, "verifier_reject_test"));
        let named = s.replace(
            "Error: the",
            "program verifier_reject_test was rejected: the",
        );
        assert!(rejected_by_name(&named, "verifier_reject_test"));
    }
}
