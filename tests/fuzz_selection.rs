//! Bounded, seeded fuzzing of the Measurement Set selection (issue 18) against a real MS:
//! the field, spectral windows, channel ranges and data columns that the options `--field`,
//! `--spw`, `--channels` and `--column` select, from random and mutated values (empty, huge,
//! doubled commas, unicode, overflowing u64 …), through `pipeline::vis::open_selection` and the
//! reader. Nothing may panic, and a selection the MS cannot satisfy must be refused by an error
//! naming its option. How clap and `SelectionArgs` turn the typed values into a selection is
//! fuzzed by the CLI's unit tests (`src/cli/fuzz_tests.rs`), with the same values.

use interf_image::pipeline::vis::open_selection;
use ms_io::{DataColumn, FieldSelector, MeasurementSet, Selection};

const MS: &str = "tests/data/vla_3c273_xband.ms";

mod fuzz_common;
use fuzz_common::Rng;

/// Values a user (or a script gone wrong) might type.
const SEEDS: &[&str] = &[
    "0",
    "1",
    "0,1",
    "0,,1",
    ",",
    "",
    " ",
    "1-",
    "-1",
    "-0",
    "+1",
    "1.5",
    "1e3",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
    "4294967296",
    "0x10",
    "DATA",
    "data",
    "CORRECTED",
    "MODEL_DATA",
    "FLAG",
    "3C273",
    "J1229+0203",
    "é",
    "光",
    "💥",
    "\t",
    "a b",
    "--",
    "-",
    "=",
    "0,1,2,3,4,5,6,7,8,9",
    "NaN",
    "inf",
];

/// A seed value, or a seeded mutation of one: spliced, repeated, with a character inserted.
fn value(rng: &mut Rng) -> String {
    let mut s = SEEDS[rng.below(SEEDS.len())].to_string();
    for _ in 0..rng.below(3) {
        match rng.below(4) {
            0 => {
                s.push_str([",", "-", "9", "0", "é", " "][rng.below(6)]);
            }
            1 => {
                let other = SEEDS[rng.below(SEEDS.len())];
                s = format!("{s},{other}");
            }
            2 => {
                let cut = s.char_indices().map(|(i, _)| i).nth(rng.below(s.len() + 1));
                s.truncate(cut.unwrap_or(s.len()));
            }
            _ => s = s.repeat(1 + rng.below(3)),
        }
    }
    s
}

/// An id as typed: a whole number from 0 to u64::MAX, as the CLI reads a usize.
fn id(s: &str) -> Option<usize> {
    s.parse::<u64>().ok().and_then(|v| usize::try_from(v).ok())
}

/// The selection the CLI makes of `vals` given to `opt`, or `None` when it refuses them before
/// the MS is opened.
fn selection(opt: &str, vals: &[String]) -> Option<Selection> {
    let mut sel = Selection::default();
    match opt {
        "--spw" => sel.spws = Some(vals[0].split(',').map(id).collect::<Option<_>>()?),
        "--channels" => {
            let (a, b) = (id(vals.first()?)?, id(vals.get(1)?)?);
            sel.channels = Some((a, b));
        }
        "--field" => {
            sel.field = Some(match vals[0].parse::<usize>() {
                Ok(i) => FieldSelector::Id(i),
                Err(_) => FieldSelector::Name(vals[0].clone()),
            })
        }
        _ => {
            sel.column = match vals[0].to_ascii_uppercase().as_str() {
                "DATA" => DataColumn::Data,
                "CORRECTED_DATA" | "CORRECTED" => DataColumn::CorrectedData,
                "MODEL_DATA" | "MODEL" => DataColumn::ModelData,
                _ => return None,
            }
        }
    }
    Some(sel)
}

#[test]
fn selections_never_panic_and_are_refused_by_their_option() {
    let ms = MeasurementSet::open(MS).unwrap();
    let mut rng = Rng(0x5e1e_c710);
    let (mut accepted, mut refused) = (0, 0);
    let start = std::time::Instant::now();
    for _ in 0..1000 {
        let (opt, vals) = match rng.below(4) {
            0 => ("--spw", vec![value(&mut rng)]),
            1 => {
                let n = [2, 2, 2, 1, 3][rng.below(5)];
                ("--channels", (0..n).map(|_| value(&mut rng)).collect())
            }
            2 => ("--field", vec![value(&mut rng)]),
            _ => ("--column", vec![value(&mut rng)]),
        };
        let Some(sel) = selection(opt, &vals) else {
            continue;
        };
        // The MS either has it or says which option asks for what it lacks.
        match open_selection(&ms, &sel) {
            Ok(_) => accepted += 1,
            Err(e) => {
                let e = format!("{e:#}");
                assert!(
                    e.contains(opt),
                    "{opt} {vals:?} refused by the MS without naming {opt}: {e}"
                );
                refused += 1;
            }
        }
    }
    assert!(
        accepted >= 5 && refused >= 100,
        "{accepted} accepted, {refused} refused"
    );
    assert!(start.elapsed().as_secs_f64() < 5.0, "{:?}", start.elapsed());
}
