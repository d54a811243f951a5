//! The decision API's client, compiled from the same .proto the binary
//! serves: tests speak to `tollgate decision` as any other client would,
//! not through the product's own types.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=../proto");
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(
            &["../proto/tollgate/authz/v1/decision.proto"],
            &["../proto"],
        )?;
    Ok(())
}
