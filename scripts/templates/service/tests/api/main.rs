//! {{service}}'s tests, against a real PostgreSQL and broker. One binary for all of them: each
//! test binary links the whole service and librdkafka.

mod events;
mod helpers;
mod items;
mod tasks;
