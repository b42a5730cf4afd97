"""Changing the cluster's shape: rebalances, scale jobs, whether new actors fit."""
