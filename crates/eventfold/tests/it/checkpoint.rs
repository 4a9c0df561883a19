//! The framework's checkpoint stores keep the contract that `testing::check_checkpoint_store`
//! checks (the SQLite and PostgreSQL crates run the same check on theirs), on the memory store
//! and on the engine.

use std::sync::Arc;

use eventfold::testing::check_checkpoint_store;
use eventfold::{InMemoryCheckpoints, StoreCheckpoints};

use crate::support::{memory_store, temp_store};

#[tokio::test]
async fn in_memory_and_store_checkpoints_keep_the_contract() {
    check_checkpoint_store(&InMemoryCheckpoints::new()).await;
    check_checkpoint_store(&StoreCheckpoints::new(memory_store())).await;
    let (_dir, engine) = temp_store();
    check_checkpoint_store(&StoreCheckpoints::new(Arc::clone(&engine))).await;
}
