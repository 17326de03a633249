//! Bounded, seeded fuzzing of the selection options (issue 18) through clap and
//! `SelectionArgs::to_selection`: `--spw`, `--channels`, `--field` and `--column`. Random and
//! mutated values (empty, huge, negative, doubled commas, unicode, overflowing u64 …) must
//! never panic; a value that parses must mean what it says; a refused one must be refused by an
//! error naming its option. The same values against a real Measurement Set, through the
//! reader, are fuzzed in `tests/fuzz_selection.rs`.

use clap::Parser;
use ms_io::{DataColumn, FieldSelector, Selection};

use super::{Cli, Command};

const MS: &str = "tests/data/vla_3c273_xband.ms";

/// xorshift64*, as `tests/fuzz_common` has it (unit tests cannot import from `tests/`): the
/// same seed gives the values the integration test sees.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

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

/// An id as typed: a whole number from 0 to u64::MAX, as clap reads a usize.
fn id(s: &str) -> Option<usize> {
    s.parse::<u64>().ok().and_then(|v| usize::try_from(v).ok())
}

/// What `s` should select as a `--spw` list, when every comma-separated part is an id.
fn expected_spws(s: &str) -> Option<Vec<usize>> {
    s.split(',').map(id).collect()
}

fn parse(opts: &[String]) -> Result<Selection, String> {
    let mut argv = vec!["interf-image".to_string(), "dirty".into(), MS.into()];
    argv.extend(opts.iter().cloned());
    let cli = Cli::try_parse_from(&argv).map_err(|e| e.to_string())?;
    let Some(Command::Dirty(args)) = cli.command else {
        panic!("dirty did not parse as dirty: {argv:?}");
    };
    args.selection.to_selection().map_err(|e| format!("{e:#}"))
}

#[test]
fn known_selections_parse_to_what_they_say() {
    let s = |o: &[&str]| parse(&o.iter().map(|x| x.to_string()).collect::<Vec<_>>());
    let sel = s(&[]).unwrap();
    assert_eq!((sel.field, sel.spws, sel.channels), (None, None, None));
    assert_eq!(sel.column, DataColumn::Data);
    assert_eq!(s(&["--spw", "0,2,1"]).unwrap().spws, Some(vec![0, 2, 1]));
    assert_eq!(s(&["--spw=3"]).unwrap().spws, Some(vec![3]));
    assert_eq!(
        s(&["--channels", "2", "10"]).unwrap().channels,
        Some((2, 10))
    );
    assert_eq!(
        s(&["--field", "2"]).unwrap().field,
        Some(FieldSelector::Id(2))
    );
    assert_eq!(
        s(&["--field", "3C273"]).unwrap().field,
        Some(FieldSelector::Name("3C273".into()))
    );
    assert_eq!(
        s(&["--column", "corrected_data"]).unwrap().column,
        DataColumn::CorrectedData
    );
    assert_eq!(
        s(&["--column", "MODEL"]).unwrap().column,
        DataColumn::ModelData
    );
    for (opt, bad) in [
        (&["--spw", "0,,1"][..], "--spw"),
        (&["--spw", "-1"], "--spw"),
        (&["--spw", "18446744073709551616"], "--spw"),
        (&["--spw", "1-"], "--spw"),
        (&["--channels", "1"], "--channels"),
        (&["--channels", "-1", "4"], "--channels"),
        (&["--column", "FLAG"], "--column"),
    ] {
        let e = s(opt).unwrap_err();
        assert!(e.contains(bad), "{opt:?}: {e}");
    }
}

#[test]
fn selection_options_never_panic() {
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
        let mut opts = vec![opt.to_string()];
        opts.extend(vals.iter().cloned());
        let names_it = |e: &str| {
            e.contains(opt)
                // A value clap cannot give to the option (`--`, `-x`, a third channel): it
                // names that value (or its leading flag-like part).
                || e
                    .split_once("unexpected argument '")
                    .and_then(|(_, rest)| rest.split_once('\''))
                    .is_some_and(|(arg, _)| vals.iter().any(|v| v.starts_with(arg)))
        };
        let sel = match parse(&opts) {
            Ok(sel) => sel,
            Err(e) => {
                assert!(names_it(&e), "{opts:?} refused without naming {opt}: {e}");
                refused += 1;
                continue;
            }
        };
        // What parsed must be what was typed.
        match opt {
            "--spw" => assert_eq!(sel.spws, expected_spws(&vals[0]), "{opts:?}"),
            "--channels" => {
                // (A third value can only be `--`, the end of the options.)
                let v: Vec<usize> = vals
                    .iter()
                    .take(2)
                    .map(|v| id(v).unwrap_or_else(|| panic!("{opts:?} accepted")))
                    .collect();
                assert_eq!(sel.channels, Some((v[0], v[1])), "{opts:?}");
            }
            "--field" => {
                let want = match vals[0].parse::<usize>() {
                    Ok(i) => FieldSelector::Id(i),
                    Err(_) => FieldSelector::Name(vals[0].clone()),
                };
                assert_eq!(sel.field, Some(want), "{opts:?}");
            }
            _ => assert!(
                ["DATA", "CORRECTED_DATA", "CORRECTED", "MODEL_DATA", "MODEL"]
                    .contains(&vals[0].to_ascii_uppercase().as_str()),
                "{opts:?} accepted as {:?}",
                sel.column
            ),
        }
        accepted += 1;
    }
    assert!(
        accepted >= 5 && refused >= 100,
        "{accepted} accepted, {refused} refused"
    );
    assert!(start.elapsed().as_secs_f64() < 5.0, "{:?}", start.elapsed());
}
