-- The sum of an order's quantities can exceed what an INT holds (orders does not bound the sum
-- of its lines by INT), and a read model must store whatever the owner accepted: an event it
-- cannot store would be set aside instead of applied. BIGINT holds any sum of INT quantities
-- of any realistic number of lines.
ALTER TABLE orders_view ALTER COLUMN item_count TYPE BIGINT;
