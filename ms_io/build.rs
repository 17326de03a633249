// Compiles the C++ glue (glue/msio_glue.cc) against the casacore headers that
// rubbl_casatables_impl installs. Its `links = "casa"` key exports them as DEP_CASA_INCLUDE, but
// only to crates that depend on it directly: hence the direct dependency in Cargo.toml.

use std::env;

const FILES: &[&str] = &["glue/msio_glue.cc"];

fn main() {
    let include = env::var_os("DEP_CASA_INCLUDE")
        .expect("DEP_CASA_INCLUDE not set: ms_io must depend on rubbl_casatables_impl directly");
    cc::Build::new()
        .cpp(true)
        .warnings(true)
        .flag_if_supported("-std=c++11")
        .flag_if_supported("-Wno-deprecated-declarations")
        // Same namespace and threading macros as rubbl_casatables_impl's build of casacore, so
        // that our view of the headers matches the compiled library.
        .define("casacore", "rubbl_casacore")
        .define("USE_THREADS", "1")
        // Bulk reads are the point of this glue: keep it optimised even in debug builds.
        .opt_level(2)
        .include(include)
        .files(FILES)
        .compile("msio_glue");
    for f in FILES {
        println!("cargo:rerun-if-changed={f}");
    }
    // The glue calls into casacore: list casacore after it so that the static link resolves.
    println!("cargo:rustc-link-lib=static=casatables_impl");
}
