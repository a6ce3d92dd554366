"""Tests of the local platform (infra/): template resolution, embedded AWS, dispatch, API, events."""
