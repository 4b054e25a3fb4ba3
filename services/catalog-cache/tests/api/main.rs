//! catalog-cache's tests, against a real PostgreSQL and broker. One binary for all of them: each
//! test binary links the whole service and librdkafka.

mod contract;
mod events;
mod fuzz;
mod health;
mod helpers;
mod products;
mod shutdown;
