"""`posefeed bench`: posefeed against the usual CPU loaders, side by side."""
