"""unimoe_audio.integrations"""
