//! Runs the storage suite against PostgreSQL when `ENTITLE_TEST_POSTGRES_URL` is set.

mod suite;

use entitle_store::testing::{fresh_postgres_database, postgres_url};
use entitle_store::{PostgresOptions, SqlStore};

#[tokio::test]
async fn postgres_passes_the_storage_suite() {
    let Some(base) = postgres_url("the storage suite") else {
        return;
    };
    let url = fresh_postgres_database(&base)
        .await
        .expect("fresh database");
    let store = SqlStore::connect_postgres(&url, PostgresOptions::default())
        .await
        .expect("connect");
    suite::run_all(&store).await;
    suite::test_seed::run_all(&store).await;
    store.close().await;
}

#[tokio::test]
async fn postgres_migrations_can_run_from_several_nodes_at_once() {
    let Some(base) = postgres_url("concurrent migrations") else {
        return;
    };
    let url = fresh_postgres_database(&base)
        .await
        .expect("fresh database");
    let nodes = (0..3).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            SqlStore::connect_postgres(&url, PostgresOptions::default())
                .await
                .map(|_| ())
        })
    });
    for node in nodes {
        node.await.expect("task").expect("every node starts");
    }
}
