from stream.s3.storage import sse_args
from stream.settings import EncryptionSettings


def test_each_encryption_setting_maps_to_its_put_arguments():
    assert sse_args(EncryptionSettings(type="none")) == {}
    assert sse_args(EncryptionSettings(type="sse-s3")) == {"ServerSideEncryption": "AES256"}
    assert sse_args(EncryptionSettings(type="sse-kms", kms_key_id="arn:aws:kms:us-east-1:1:key/k")) == {
        "ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "arn:aws:kms:us-east-1:1:key/k"}
