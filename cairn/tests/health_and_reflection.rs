//! What operators' tools ask of every `cairn serve` process: the gRPC health checking
//! protocol (SERVING while it serves, NOT_SERVING once it begins to shut down) and server
//! reflection (the services it serves, as `grpcurl list` asks for them).

use crate::support;

use support::{Served, serve};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

async fn channel(server: &Served) -> Channel {
    Endpoint::from_shared(server.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// The service names reflection lists.
async fn services(channel: Channel) -> Vec<String> {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer: ServerReflectionResponse = answers.message().await.unwrap().unwrap();
    match answer.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("not a list of services: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_reports_its_health_and_lists_its_services() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::node_config(dir.path(), "node");
    let kinds = [
        ("journal", "cairn.journal.Journal"),
        ("storage", "cairn.storage.Storage"),
        ("compaction", "cairn.compaction.Compaction"),
        ("shard", "cairn.shard.Shard"),
    ];
    for (component, service) in kinds {
        let server = serve(&config, component, "127.0.0.1:0", &[]);
        let channel = channel(&server).await;

        let listed = services(channel.clone()).await;
        for want in [
            service,
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
        ] {
            assert!(
                listed.iter().any(|s| s == want),
                "{component}: {want} missing from {listed:?}"
            );
        }

        let mut health = HealthClient::new(channel);
        let overall = HealthCheckRequest {
            service: String::new(),
        };
        let status = health.check(overall.clone()).await.unwrap().into_inner();
        assert_eq!(status.status, ServingStatus::Serving as i32, "{component}");
        let mut watch = health.watch(overall).await.unwrap().into_inner();
        let first = watch.message().await.unwrap().unwrap().status;
        assert_eq!(first, ServingStatus::Serving as i32, "{component}");
        server.terminate();
        let next = watch.message().await.unwrap().unwrap().status;
        assert_eq!(
            next,
            ServingStatus::NotServing as i32,
            "{component}: NOT_SERVING once SIGTERM begins the shutdown"
        );
    }
}
