-- Seed data: five users (the first is an admin) and fifty products.

INSERT INTO users (id, email, name, role) VALUES
    (1, 'ada@example.com',    'Ada Admin',     'admin'),
    (2, 'bob@example.com',    'Bob Buyer',     'customer'),
    (3, 'carol@example.com',  'Carol Carter',  'customer'),
    (4, 'dave@example.com',   'Dave Doe',      'customer'),
    (5, 'erin@example.com',   'Erin Evans',    'customer');
SELECT setval('users_id_seq', (SELECT max(id) FROM users));

INSERT INTO products (id, sku, name, description, price_cents, stock)
SELECT
    n,
    'SKU-' || lpad(n::text, 4, '0'),
    (ARRAY['Espresso Beans', 'Pour-over Kettle', 'Ceramic Mug', 'Burr Grinder', 'Milk Frother',
           'Paper Filters', 'Cold Brew Jar', 'Travel Tumbler', 'Tea Sampler', 'Digital Scale'])[1 + (n - 1) % 10]
        || ' ' || (ARRAY['Classic', 'Pro', 'Mini', 'Deluxe', 'Eco'])[1 + (n - 1) / 10],
    'Seeded catalogue item number ' || n || '.',
    499 + (n * 137) % 9500,
    1000 + (n * 31) % 500
FROM generate_series(1, 50) AS n;
SELECT setval('products_id_seq', (SELECT max(id) FROM products));
