//! Compiles the Kubernetes `.proto` files in `protos/` (see `protos/README.md`) into one encoded
//! `FileDescriptorSet` in `OUT_DIR`, which `src/protobuf.rs` reads protobuf bodies with. protox is
//! a protobuf compiler in Rust, so no `protoc` is needed.

use std::path::{Path, PathBuf};

fn proto_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            proto_files(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new("protos");
    println!("cargo:rerun-if-changed=protos");
    let mut files = Vec::new();
    proto_files(root, &mut files)?;
    files.sort();
    let relative: Vec<PathBuf> = files
        .iter()
        .map(|file| file.strip_prefix(root).map(Path::to_path_buf))
        .collect::<Result<_, _>>()?;
    let descriptors = protox::Compiler::new([root])?
        .include_imports(true)
        .open_files(relative)?
        .encode_file_descriptor_set();
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("kubernetes-protos.bin");
    std::fs::write(out, descriptors)?;
    Ok(())
}
