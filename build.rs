//! Gives every binary of this package (the CLI, tests, benches) an rpath to libtorch's
//! `lib/` folder, so that nobody has to set LD_LIBRARY_PATH. torch-sys (a direct
//! dependency, `links = "tch"`) tells us where that folder is.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        // The linker drops libraries nothing references directly (--as-needed); libtorch_cuda
        // is only reached through static initialisers, so keep it when it exists, or CUDA
        // would never be available at run time.
        let cuda = std::path::Path::new(&lib).join("libtorch_cuda.so");
        if cuda.exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}
