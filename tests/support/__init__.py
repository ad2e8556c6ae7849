"""Helpers shared by the test tiers (unit, integration, e2e); no tests live here."""
