"""Test environments with rich spaces and infos, for differential tests of remote vs local."""
