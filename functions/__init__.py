"""Thin functions-framework entry points: parse, call `hookhub`, answer. No logic lives here."""
