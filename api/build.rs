fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = [
        "proto/yinyi/v1/common.proto",
        "proto/yinyi/v1/payment.proto",
        "proto/yinyi/v1/his.proto",
        "proto/yinyi/v1/inpatient.proto",
        "proto/yinyi/v1/terminal.proto",
        "proto/yinyi/v1/admin.proto",
    ];
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .file_descriptor_set_path(out_dir.join("yinyi_v1_descriptor.bin"))
        .compile_protos(&protos, &["proto"])?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
