#![doc = include_str!("../README.md")]

mod config;
pub mod consumer;
mod handler_error;
mod health;
mod message;
mod producer;
mod topics;

pub use config::KafkaConfig;
pub use consumer::{
    ConsumerBuilder, Failure, FailurePolicy, Handler, HandlerError, KeepRetrying, RetryPolicy,
    RunningConsumer,
};
pub use health::BrokerCheck;
pub use message::{Message, header};
pub use producer::{Delivery, InFlight, MessageHeaders, Producer, is_permanent};
pub use topics::{TopicSpec, ensure_topics};
