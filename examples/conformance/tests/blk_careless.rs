//! The block catalogue can fail: a small blkfront written from scratch
//! (tests/blk_toy) passes it when careful, and each careless shortcut fails exactly
//! the cases about it, with evidence. Together the shortcuts fail every case.

#[allow(dead_code)]
mod blk_toy;

use std::collections::BTreeSet;

use blk_toy::{make, Mistakes};
use xen_conformance::blk;

/// Each shortcut and the cases it must fail (names up to the first space).
fn expected() -> Vec<(&'static str, Mistakes, Vec<&'static str>)> {
    use Mistakes as M;
    vec![
        (
            "trusts ids",
            M::TRUST_IDS,
            vec![
                "response_unknown_id",
                "response_id_high_bits",
                "wrong_operation",
                "late_answer_after_timeout",
            ],
        ),
        (
            "ignores status",
            M::IGNORE_STATUS,
            vec![
                "unknown_status",
                "error_status",
                "flush_eopnotsupp",
                "discard_eopnotsupp",
                "split_halves_disagree",
            ],
        ),
        (
            "no timeout",
            M::NO_TIMEOUT,
            vec![
                "never_answers",
                "late_answer_after_timeout",
                "closing_with_requests_in_flight",
                "split_part_unanswered",
            ],
        ),
        (
            "writable write grants",
            M::WRITABLE_WRITE_GRANTS,
            vec!["write_grants_read_only"],
        ),
        (
            "trusts geometry",
            M::TRUST_GEOMETRY,
            vec![
                "sectors_zero",
                "sectors_overflow",
                "sectors_garbage",
                "sectors_change_absurd",
                "sector_size_below_512",
                "sector_size_not_power_of_two",
            ],
        ),
        (
            "trusts offers",
            M::TRUST_OFFERS,
            vec!["huge_offers_clamped", "garbage_offers"],
        ),
        (
            "stale bounce pages",
            M::STALE_BOUNCE,
            vec!["pages_hold_only_request_data", "read_never_written"],
        ),
        ("dirty padding", M::DIRTY_PADDING, vec!["request_padding"]),
        (
            "ignores notify errors",
            M::IGNORE_NOTIFY_ERROR,
            vec!["notify_fails"],
        ),
        (
            "never polls xenstore",
            M::NO_EVENTS,
            vec![
                "sectors_grow",
                "closing_with_requests_in_flight",
                "backend_directory_removed",
            ],
        ),
        (
            "forgets timed-out requests",
            M::FORGET_TIMED_OUT,
            vec!["late_answer_after_timeout"],
        ),
        (
            "ignores end-access failure",
            M::IGNORE_END_FAILURE,
            vec!["grants_kept_mapped_at_close", "answered_while_mapped"],
        ),
        (
            "leaks grants at close",
            M::LEAK_GRANTS,
            vec!["grants_kept_mapped_at_close", "no_grant_left_after_close"],
        ),
        ("ignores info", M::IGNORE_INFO, vec!["info_read_only"]),
        (
            "keeps unsupported features",
            M::KEEP_FEATURES,
            vec!["flush_eopnotsupp", "discard_eopnotsupp"],
        ),
        (
            "trusts indices",
            M::TRUST_INDICES,
            vec!["rsp_prod_overrun", "rsp_prod_backwards"],
        ),
        (
            "wrong sector unit",
            M::WRONG_SECTOR_UNIT,
            vec!["sector_size_4096"],
        ),
        (
            "no slot mask",
            M::NO_SLOT_MASK,
            vec![
                "roundtrip",
                "ring_laps",
                "responses_out_of_order",
                "request_padding",
                "no_grant_left_after_close",
            ],
        ),
        (
            "state in shared memory",
            M::STATE_IN_SHARED_MEMORY,
            vec!["garbage_event_indices"],
        ),
        (
            "assumes in-order responses",
            M::ASSUME_IN_ORDER,
            vec!["late_answer_after_timeout", "responses_out_of_order"],
        ),
        (
            "keeps going after a protocol error",
            M::KEEP_GOING,
            vec![
                "response_unknown_id",
                "response_id_high_bits",
                "wrong_operation",
                "unknown_status",
            ],
        ),
        (
            "one request a turn, assumes in-order responses",
            Mistakes(M::ONE_PER_TURN.0 | M::ASSUME_IN_ORDER.0),
            vec!["late_answer_after_timeout", "responses_out_of_order"],
        ),
        (
            "one request a turn (not a mistake)",
            M::ONE_PER_TURN,
            vec![],
        ),
        (
            "ends mapped grants by force at close",
            M::FORCE_END,
            vec!["grants_kept_mapped_at_close"],
        ),
        (
            "keeps going after errors, ends one mapped grant by force at close",
            Mistakes(M::KEEP_GOING.0 | M::FORCE_END_ONE.0),
            vec![
                "response_unknown_id",
                "response_id_high_bits",
                "wrong_operation",
                "unknown_status",
                "grants_kept_mapped_at_close",
            ],
        ),
        (
            "reconnects while mapped (not a mistake)",
            M::RECONNECT_WHILE_MAPPED,
            vec![],
        ),
        (
            "trusts indices and ids",
            Mistakes(M::TRUST_INDICES.0 | M::TRUST_IDS.0),
            vec![
                "rsp_prod_overrun",
                "rsp_prod_backwards",
                "response_unknown_id",
                "response_id_high_bits",
                "duplicate_response",
                "wrong_operation",
                "late_answer_after_timeout",
            ],
        ),
    ]
}

fn short(name: &str) -> &str {
    name.trim_start_matches("blk.")
        .split(' ')
        .next()
        .unwrap_or(name)
}

#[test]
fn the_careful_toy_passes_the_block_catalogue() {
    if cfg!(miri) {
        // Under Miri the harness runs every case in blk_catalogue.rs (against
        // xbd-front); the toy is test code, and a full run costs minutes there.
        return;
    }
    let report = blk::run(make(Mistakes::NONE));
    println!("{report}");
    assert!(report.all_passed(), "{report}");
}

/// Every shortcut fails exactly its cases. Not under Miri: it shows that every case
/// can fail, which has no memory-safety content (the toy is test code; the harness
/// runs there against xbd-front, tests/blk_catalogue.rs), and even one shortcut's
/// cases cost Miri most of a minute (docs/miri.md).
#[test]
#[cfg_attr(
    miri,
    ignore = "shows the cases can fail (no memory-safety content); slow under Miri"
)]
fn each_careless_shortcut_fails_exactly_its_cases() {
    let mut failed_somewhere = BTreeSet::new();
    for (what, m, want) in expected() {
        let report = blk::run(make(m));
        let failed: Vec<&str> = report
            .rows
            .iter()
            .filter(|r| !r.pass)
            .map(|r| short(r.name))
            .collect();
        println!("{what}:");
        for r in report.rows.iter().filter(|r| !r.pass) {
            println!("  {}: {}", r.name, r.evidence);
        }
        assert_eq!(failed, want, "{what}\n{report}");
        failed_somewhere.extend(failed);
    }
    let never: Vec<&str> = blk::catalogue()
        .iter()
        .map(|c| short(c.name))
        .filter(|n| !failed_somewhere.contains(n))
        .collect();
    assert!(
        never.is_empty(),
        "cases no careless driver fails: {never:?}"
    );
}

/// The evidence of a failed case says what was seen, with the right numbers
/// (cargo-mutants: arithmetic that only a failing driver reaches).
#[test]
fn evidence_names_what_went_wrong() {
    if cfg!(miri) {
        // The harness under Miri: each_careless_shortcut_fails_exactly_its_cases.
        return;
    }
    use Mistakes as M;
    // (driver, case, whether it passes, what the evidence says)
    let cases: &[(Mistakes, &str, bool, &str)] = &[
        // A passing row's evidence too: the toy gives up after WAITS waits.
        (M::NONE, "blk.never_answers", true, "failed after 100 waits"),
        (
            M::KEEP_GOING,
            "blk.response_unknown_id",
            false,
            "the next read succeeded (1 more requests reached the backend)",
        ),
        (
            M::WITHOUT_DISCARD,
            "blk.discard_eopnotsupp",
            true,
            "the driver has no discard (nothing to turn off)",
        ),
        (
            M::KEEP_FEATURES,
            "blk.discard_eopnotsupp",
            false,
            "the second discard reached the backend",
        ),
        (
            M::NONE,
            "blk.write_grants_read_only",
            true,
            "5 write requests, every data grant read-only",
        ),
        (
            M::IGNORE_INFO,
            "blk.info_read_only",
            false,
            "write failed (I/O error) but 1 write request(s) were sent",
        ),
        // One mapped grant ended at close while two others stay live (the ring's
        // and a second data page's: KEEP_GOING sends the write after the read's
        // grant got stuck): each mapped page's own grant is looked for, not just
        // any live grant of another page.
        (
            Mistakes(M::KEEP_GOING.0 | M::FORCE_END_ONE.0),
            "blk.grants_kept_mapped_at_close",
            false,
            "were ended",
        ),
        // A duplicated response the driver survives with the right data passes;
        // with the wrong data it fails, although the device is failed after.
        (
            M::TRUST_INDICES,
            "blk.duplicate_response",
            true,
            "first read delivered; then: response id",
        ),
        (
            Mistakes(M::TRUST_INDICES.0 | M::GARBLE_READS.0),
            "blk.duplicate_response",
            false,
            "wrong data: read of 4096 at 0: byte 0",
        ),
    ];
    for &(m, name, pass, want) in cases {
        let case = blk::catalogue()
            .iter()
            .find(|c| short(c.name) == short(name))
            .expect("a case of that name");
        let row = blk::run_one(case.name, make(m)).expect("the case runs");
        assert_eq!(row.pass, pass, "{name}: {}", row.evidence);
        assert!(
            row.evidence.contains(want),
            "{name}: evidence {:?} does not say {want:?}",
            row.evidence
        );
    }
}
