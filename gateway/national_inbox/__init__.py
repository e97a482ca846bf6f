"""The national inbox (Karpoosheh): partner apps read the messages agencies sent to a
citizen and send the citizen's replies, once the directory confirmed the pair."""
