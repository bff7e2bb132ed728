//! placeholder
pub mod proto {
    tonic::include_proto!("hybridgrid.v1");
}
