-- Undo V5: drop donations (and its trigger), the trigger function, then funds.

DROP TABLE donations;
DROP FUNCTION donations_maintain_fund_total();
DROP TABLE funds;
