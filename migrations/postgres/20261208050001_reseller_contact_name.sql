-- The person mail to a reseller greets, when the marketplace names one.
ALTER TABLE resellers ADD COLUMN contact_name TEXT;
