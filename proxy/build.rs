//! Compiles tollgate's own protos. protoc comes from the
//! `protoc-bin-vendored` crate so a fresh machine needs nothing installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=../proto");
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("tollgate_descriptor.bin"))
        .compile_protos(
            &["../proto/tollgate/authz/v1/decision.proto"],
            &["../proto"],
        )?;
    Ok(())
}
