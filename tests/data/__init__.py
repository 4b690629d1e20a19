"""Tests of facecraft.data."""
