//! The shop endpoints: products (with the file cache and the pricing upstream) and orders.
//!
//! Placing an order is one transaction: the product rows are locked `FOR UPDATE` in id
//! order (so two orders for the same products queue instead of deadlocking), stock is
//! checked and decremented, the order and its items are inserted, and a `confirm_order`
//! job is queued for the worker. Either all of it happens or none of it.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Acquire;

use crate::AppState;
use crate::auth::{AuthUser, Role};
use crate::cache::CacheError;
use crate::error::{AppError, ErrorCode};
use crate::metrics::ResultLabel;
use crate::upstream::server::is_currency;

/// A catalogue product, as stored, cached and served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Product {
    pub id: i64,
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price_cents: i64,
    pub stock: i32,
}

fn path_id(path: Result<Path<i64>, PathRejection>) -> Result<i64, AppError> {
    match path {
        Ok(Path(id)) if id > 0 => Ok(id),
        _ => Err(AppError::bad_request("id must be a positive integer")),
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<i64>,
    offset: Option<i64>,
}

pub async fn list_products(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, AppError> {
    let Query(query) = query.map_err(|e| AppError::bad_request(e.body_text()))?;
    let limit = query.limit.unwrap_or(20);
    let offset = query.offset.unwrap_or(0);
    if !(1..=100).contains(&limit) {
        return Err(AppError::bad_request("limit must be in 1..=100"));
    }
    if offset < 0 {
        return Err(AppError::bad_request("offset must be >= 0"));
    }
    let mut conn = state.conn().await?;
    let items: Vec<Product> = sqlx::query_as(
        "SELECT id, sku, name, description, price_cents, stock FROM products \
         ORDER BY id LIMIT $1 OFFSET $2",
    )
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Json(
        json!({"items": items, "limit": limit, "offset": offset}),
    ))
}

async fn load_product(state: &AppState, id: i64) -> Result<Product, AppError> {
    let mut conn = state.conn().await?;
    sqlx::query_as::<_, Product>(
        "SELECT id, sku, name, description, price_cents, stock FROM products WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| AppError::not_found(format!("product {id} not found")))
}

fn count_cache(state: &AppState, result: &'static str) {
    state
        .metrics
        .cache_requests
        .get_or_create(&ResultLabel { result })
        .inc();
}

pub async fn get_product(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Json<Product>, AppError> {
    let id = path_id(path)?;
    match state.cache.get(id).await {
        Ok(Some(product)) => {
            count_cache(&state, "hit");
            return Ok(Json(product));
        }
        Ok(None) => count_cache(&state, "miss"),
        Err(CacheError::Corrupt { path, reason }) => {
            count_cache(&state, "corrupt");
            tracing::error!(
                message = "Corrupt product cache entry.",
                code = "CACHE_CORRUPT",
                product_id = id,
                path = %path.display(),
                error = %reason,
            );
            return Err(
                AppError::new(ErrorCode::CacheCorrupt, "cache entry corrupt")
                    .with_detail(format!("{}: {reason}", path.display())),
            );
        }
        Err(error @ CacheError::Io { .. }) => {
            // An unreadable cache is a miss: the database can still answer.
            count_cache(&state, "miss");
            tracing::warn!(message = "Product cache unreadable, using the database.", code = "CACHE_IO", product_id = id, error = %error);
        }
    }
    let product = load_product(&state, id).await?;
    if let Err(error) = state.cache.put(&product).await {
        tracing::warn!(message = "Cannot write product cache entry.", code = "CACHE_IO", product_id = id, error = %error);
    }
    Ok(Json(product))
}

#[derive(Deserialize)]
pub struct PriceQuery {
    currency: Option<String>,
}

pub async fn get_price(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
    query: Result<Query<PriceQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, AppError> {
    let id = path_id(path)?;
    let Query(query) = query.map_err(|e| AppError::bad_request(e.body_text()))?;
    let currency = query.currency.unwrap_or_else(|| "EUR".to_owned());
    if !is_currency(&currency) {
        return Err(AppError::bad_request(
            "currency must be three upper-case letters, e.g. EUR",
        ));
    }
    let product = load_product(&state, id).await?;
    let quote = state
        .upstream
        .quote(&product.sku, &currency)
        .await
        .map_err(|e| {
            AppError::new(ErrorCode::UpstreamUnavailable, "pricing unavailable")
                .with_detail(e.to_string())
        })?;
    let converted_cents = (product.price_cents as f64 * quote.rate).round() as i64;
    Ok(Json(json!({
        "product_id": product.id,
        "sku": product.sku,
        "price_cents": product.price_cents,
        "currency": quote.currency,
        "rate": quote.rate,
        "converted_cents": converted_cents,
        "source": quote.source,
    })))
}

#[derive(Debug, Deserialize)]
pub struct OrderItemRequest {
    product_id: i64,
    quantity: i32,
}

#[derive(Debug, Deserialize)]
pub struct OrderRequest {
    items: Vec<OrderItemRequest>,
}

pub async fn create_order(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    body: Result<Json<OrderRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), AppError> {
    let Json(body) = body.map_err(|e| AppError::bad_request(e.body_text()))?;
    if body.items.is_empty() || body.items.len() > 50 {
        return Err(AppError::bad_request("items must hold 1 to 50 entries"));
    }
    // Merge duplicate lines; BTreeMap also gives the id order used for locking.
    let mut wanted: BTreeMap<i64, i32> = BTreeMap::new();
    for item in &body.items {
        if item.product_id <= 0 || !(1..=1000).contains(&item.quantity) {
            return Err(AppError::bad_request(
                "each item needs a positive product_id and a quantity in 1..=1000",
            ));
        }
        *wanted.entry(item.product_id).or_default() += item.quantity;
    }
    let ids: Vec<i64> = wanted.keys().copied().collect();

    let mut conn = state.conn().await?;
    let mut tx = conn.begin().await?;
    let user_exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)")
        .bind(claims.sub)
        .fetch_one(&mut *tx)
        .await?;
    if !user_exists {
        return Err(AppError::new(ErrorCode::AuthInvalidToken, "unknown user")
            .with_detail(format!("token subject {} has no user row", claims.sub)));
    }
    let rows: Vec<(i64, i64, i32)> = sqlx::query_as(
        "SELECT id, price_cents, stock FROM products WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    if rows.len() != ids.len() {
        let missing: Vec<i64> = ids
            .iter()
            .filter(|id| !rows.iter().any(|r| r.0 == **id))
            .copied()
            .collect();
        return Err(AppError::not_found(format!(
            "products not found: {missing:?}"
        )));
    }
    let mut total_cents: i64 = 0;
    for (id, price, stock) in &rows {
        let quantity = wanted[id];
        if *stock < quantity {
            return Err(AppError::new(
                ErrorCode::OutOfStock,
                format!("product {id} has {stock} in stock, {quantity} requested"),
            ));
        }
        total_cents += price * i64::from(quantity);
    }
    let order_id: i64 = sqlx::query_scalar(
        "INSERT INTO orders (user_id, status, total_cents) VALUES ($1, 'pending', $2) RETURNING id",
    )
    .bind(claims.sub)
    .bind(total_cents)
    .fetch_one(&mut *tx)
    .await?;
    let quantities: Vec<i32> = rows.iter().map(|r| wanted[&r.0]).collect();
    let prices: Vec<i64> = rows.iter().map(|r| r.1).collect();
    sqlx::query(
        "INSERT INTO order_items (order_id, product_id, quantity, unit_price_cents) \
         SELECT $1, * FROM UNNEST($2::bigint[], $3::int[], $4::bigint[])",
    )
    .bind(order_id)
    .bind(&ids)
    .bind(&quantities)
    .bind(&prices)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE products AS p SET stock = p.stock - w.quantity, updated_at = now() \
         FROM UNNEST($1::bigint[], $2::int[]) AS w(id, quantity) WHERE p.id = w.id",
    )
    .bind(&ids)
    .bind(&quantities)
    .execute(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO jobs (kind, payload) VALUES ('confirm_order', $1)")
        .bind(json!({"order_id": order_id}))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;

    // The cached entries still show the old stock.
    for id in &ids {
        if let Err(error) = state.cache.invalidate(*id).await {
            tracing::warn!(message = "Cannot invalidate product cache entry.", code = "CACHE_IO", product_id = id, error = %error);
        }
    }
    tracing::info!(
        message = "Order placed.",
        order_id,
        user_id = claims.sub,
        total_cents,
        lines = ids.len()
    );
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": order_id, "status": "pending", "total_cents": total_cents})),
    ))
}

pub async fn get_order(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Json<serde_json::Value>, AppError> {
    let id = path_id(path)?;
    let mut conn = state.conn().await?;
    let order: Option<(i64, i64, String, i64, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT id, user_id, status, total_cents, created_at FROM orders WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    // Someone else's order is reported as missing, not forbidden: its existence is
    // private too.
    let Some((id, user_id, status, total_cents, created_at)) =
        order.filter(|o| o.1 == claims.sub || claims.role == Role::Admin)
    else {
        return Err(AppError::not_found(format!("order {id} not found")));
    };
    let items: Vec<(i64, i32, i64)> = sqlx::query_as(
        "SELECT product_id, quantity, unit_price_cents FROM order_items WHERE order_id = $1 ORDER BY product_id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let items: Vec<_> = items
        .into_iter()
        .map(|(product_id, quantity, unit_price_cents)| {
            json!({"product_id": product_id, "quantity": quantity, "unit_price_cents": unit_price_cents})
        })
        .collect();
    Ok(Json(json!({
        "id": id,
        "user_id": user_id,
        "status": status,
        "total_cents": total_cents,
        "created_at": created_at,
        "items": items,
    })))
}

#[derive(Debug, Deserialize)]
pub struct ProductRequest {
    sku: String,
    name: String,
    #[serde(default)]
    description: String,
    price_cents: i64,
    stock: i32,
}

/// Creates a product, or updates the one with the same SKU; invalidates its cache entry.
pub async fn upsert_product(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    body: Result<Json<ProductRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Product>), AppError> {
    if claims.role != Role::Admin {
        return Err(AppError::new(ErrorCode::Forbidden, "admin role required"));
    }
    let Json(body) = body.map_err(|e| AppError::bad_request(e.body_text()))?;
    if body.sku.trim().is_empty() || body.sku.len() > 64 || body.name.trim().is_empty() {
        return Err(AppError::bad_request(
            "sku (1-64 chars) and name are required",
        ));
    }
    if body.price_cents < 0 || body.stock < 0 {
        return Err(AppError::bad_request("price_cents and stock must be >= 0"));
    }
    let mut conn = state.conn().await?;
    let (inserted, product): (bool, Product) = {
        let row: (bool, i64, String, String, String, i64, i32) = sqlx::query_as(
            "INSERT INTO products (sku, name, description, price_cents, stock) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (sku) DO UPDATE SET name = EXCLUDED.name, description = EXCLUDED.description, \
               price_cents = EXCLUDED.price_cents, stock = EXCLUDED.stock, updated_at = now() \
             RETURNING (xmax = 0), id, sku, name, description, price_cents, stock",
        )
        .bind(body.sku.trim())
        .bind(body.name.trim())
        .bind(&body.description)
        .bind(body.price_cents)
        .bind(body.stock)
        .fetch_one(&mut *conn)
        .await?;
        (
            row.0,
            Product {
                id: row.1,
                sku: row.2,
                name: row.3,
                description: row.4,
                price_cents: row.5,
                stock: row.6,
            },
        )
    };
    if let Err(error) = state.cache.invalidate(product.id).await {
        tracing::warn!(message = "Cannot invalidate product cache entry.", code = "CACHE_IO", product_id = product.id, error = %error);
    }
    tracing::info!(message = "Product saved.", product_id = product.id, sku = %product.sku, inserted);
    let status = if inserted {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(product)))
}
