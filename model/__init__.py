"""unimoe_audio.model"""
