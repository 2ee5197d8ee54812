using System.Text;
using Modular.Plugins.Rosenpass.Protocol;
using static Modular.Rosenpass.Tests.RosenpassVectors;

namespace Modular.Rosenpass.Tests;

/// <summary>The keyed hashes and the XAEAD against upstream's doc-test values (and the computed ones beside them).</summary>
public sealed class PrimitiveTests
{
    private static JsonElementList Cases(string name) => new(Root.GetProperty("primitives").Get(name));

    [Fact]
    public void IncorrectHmacBlake2b_MatchesEveryVector()
    {
        var cases = Cases("incorrect_hmac_blake2b");
        Assert.Equal(3, cases.Count);
        foreach (var c in cases)
        {
            Assert.Equal(c.GetProperty("out").GetString(), Hex(KeyedHash.Hash(ProtocolVersion.V02, c.Bytes("key"), c.Bytes("data"))));
        }
    }

    [Fact]
    public void IncorrectHmacBlake2b_InnerHashOfTheOfficialDocTest()
    {
        var c = Cases("incorrect_hmac_blake2b")[0];
        var innerKey = c.Bytes("key").Select(b => (byte)(b ^ 0x36)).ToArray();
        var inner = new byte[32];
        KeyedHash.Blake2b256(innerKey, c.Bytes("data"), inner);
        Assert.Equal(c.Get("inner_blake2b_keyed(key^0x36..,").GetString(), Hex(inner));
    }

    [Fact]
    public void KeyedBlake2b256_MatchesVector()
    {
        var c = Cases("plain_keyed_blake2b_256")[0];
        var output = new byte[32];
        KeyedHash.Blake2b256(c.Bytes("key"), c.Bytes("data"), output);
        Assert.Equal(c.GetProperty("out").GetString(), Hex(output));
    }

    [Fact]
    public void KeyedShake256_MatchesEveryVector()
    {
        var cases = Cases("keyed_shake256");
        Assert.Equal(2, cases.Count);
        foreach (var c in cases)
        {
            Assert.Equal(c.GetProperty("out").GetString(), Hex(KeyedHash.Hash(ProtocolVersion.V03, c.Bytes("key"), c.Bytes("data"))));
        }
    }

    [Theory]
    [InlineData(ProtocolVersion.V02)]
    [InlineData(ProtocolVersion.V03)]
    public void KeyedHash_DependsOnKeyAndData_AndRejectsBadKeyLengths(ProtocolVersion version)
    {
        var key = new byte[32];
        var data = Encoding.ASCII.GetBytes("Rosenpass");
        var reference = KeyedHash.Hash(version, key, data);
        key[31] = 1;
        Assert.NotEqual(reference, KeyedHash.Hash(version, key, data));
        key[31] = 0;
        data[0] ^= 1;
        Assert.NotEqual(reference, KeyedHash.Hash(version, key, data));
        Assert.Throws<ArgumentException>(() => KeyedHash.Hash(version, new byte[31], data));
        Assert.Throws<ArgumentException>(() => KeyedHash.Hash(version, new byte[33], data));
    }

    [Fact]
    public void XChaCha20Poly1305_MatchesTheOfficialDocTest_AndOpensIt()
    {
        var c = Cases("xchacha20poly1305_nonce_in_ciphertext")[0];
        var pt = c.Bytes("pt");
        var output = new byte[24 + pt.Length + 16];
        Aead.XEncrypt(c.Bytes("key"), c.Bytes("nonce"), c.Bytes("ad"), pt, output);
        Assert.Equal(c.Get("out").GetString(), Hex(output));

        var opened = new byte[pt.Length];
        Assert.True(Aead.TryXDecrypt(c.Bytes("key"), c.Bytes("ad"), output, opened));
        Assert.Equal(pt, opened);
    }

    [Fact]
    public void XChaCha20Poly1305_RejectsWrongKeyWrongAdAndEveryFlippedByte()
    {
        var c = Cases("xchacha20poly1305_nonce_in_ciphertext")[0];
        var sealedBox = c.Bytes("out");
        var opened = new byte[sealedBox.Length - 40];
        var wrongKey = c.Bytes("key");
        wrongKey[0] ^= 1;
        Assert.False(Aead.TryXDecrypt(wrongKey, c.Bytes("ad"), sealedBox, opened));
        var wrongAd = c.Bytes("ad");
        wrongAd[^1] ^= 1;
        Assert.False(Aead.TryXDecrypt(c.Bytes("key"), wrongAd, sealedBox, opened));
        for (var i = 0; i < sealedBox.Length; i++)
        {
            var tampered = (byte[])sealedBox.Clone();
            tampered[i] ^= 0x01;
            Assert.False(Aead.TryXDecrypt(c.Bytes("key"), c.Bytes("ad"), tampered, opened), $"flipped byte {i} was accepted");
        }

        Assert.All(opened, b => Assert.Equal(0, b));
        Assert.False(Aead.TryXDecrypt(c.Bytes("key"), c.Bytes("ad"), sealedBox.AsSpan(0, 39), []));
    }

    [Fact]
    public void HChaCha20_MatchesTheDraftTestVector()
    {
        // draft-irtf-cfrg-xchacha-03, section 2.2.1.
        var key = Convert.FromHexString("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
        var nonce = Convert.FromHexString("000000090000004a0000000031415927");
        var subkey = new byte[32];
        Aead.HChaCha20(key, nonce, subkey);
        Assert.Equal("82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc", Hex(subkey));
    }
}

/// <summary>A JSON array as a list (for Count and indexing in the tests).</summary>
internal sealed class JsonElementList(System.Text.Json.JsonElement array) : List<System.Text.Json.JsonElement>(array.EnumerateArray());
