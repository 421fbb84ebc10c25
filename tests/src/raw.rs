//! Raw gRPC calls: bytes sent as the message of any method (no generated code shapes them) and
//! whatever comes back as bytes. The garbage and the role tests use it.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

/// Sends bytes as they are and takes whatever comes back as bytes.
#[derive(Clone, Default)]
pub struct Raw;

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

/// One unary call of `method` (`/package.Service/Method`) with `body` as its message, and
/// `credential` (`ID:SECRET`) as the bearer when given.
pub async fn call(
    channel: Channel,
    credential: Option<&str>,
    method: &str,
    body: Vec<u8>,
) -> Result<Bytes, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(Bytes::from(body));
    request.set_timeout(Duration::from_secs(5));
    if let Some(credential) = credential {
        let value = format!("Bearer {credential}")
            .parse()
            .map_err(|_| Status::invalid_argument("credential is not ASCII"))?;
        request.metadata_mut().insert("authorization", value);
    }
    let path = tonic::codegen::http::uri::PathAndQuery::try_from(method.to_string())
        .map_err(|e| Status::invalid_argument(format!("method {method}: {e}")))?;
    grpc.unary(request, path, Raw).await.map(|r| r.into_inner())
}

/// Every method of the public API, as `/yinyi.v1.Service/Method`, from its descriptor set.
pub fn api_methods() -> Vec<String> {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(yinyi_api::v1::FILE_DESCRIPTOR_SET)
        .expect("the API's descriptor set decodes");
    let mut methods = Vec::new();
    for file in set.file {
        let package = file.package().to_string();
        for service in &file.service {
            for method in &service.method {
                methods.push(format!("/{package}.{}/{}", service.name(), method.name()));
            }
        }
    }
    methods
}
