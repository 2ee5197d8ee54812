using Modular.Plugins.Rosenpass.Protocol;
using static Modular.Rosenpass.Tests.RosenpassVectors;

namespace Modular.Rosenpass.Tests;

/// <summary>Every hash-domain label of both versions, and the protocol identifiers, as upstream has them.</summary>
public sealed class LabelTests
{
    public static TheoryData<ProtocolVersion, string> Versions => new()
    {
        { ProtocolVersion.V03, "V03_shake256" },
        { ProtocolVersion.V02, "V02_incorrect_hmac_blake2b" },
    };

    [Theory]
    [MemberData(nameof(Versions))]
    public void EveryLabel_MatchesTheVectors(ProtocolVersion version, string vectorName)
    {
        var expected = Root.GetProperty("hash_domain_values").GetProperty(vectorName);
        var labels = Labels.For(version);
        var actual = new Dictionary<string, HashDomain>
        {
            ["protocol"] = labels.Protocol,
            ["mac"] = labels.Mac,
            ["cookie"] = labels.Cookie,
            ["cookie_value"] = labels.CookieValue,
            ["cookie_key"] = labels.CookieKey,
            ["peerid"] = labels.PeerId,
            ["biscuit_ad"] = labels.BiscuitAd,
            ["ckinit"] = labels.CkInit,
            ["ckextract"] = labels.CkExtract,
            ["mix"] = labels.Mix,
            ["hs_enc"] = labels.HandshakeEncryption,
            ["ini_enc"] = labels.InitiatorEncryption,
            ["res_enc"] = labels.ResponderEncryption,
            ["user"] = labels.User,
            ["user_rosenpass_eu"] = labels.UserRosenpassEu,
            ["wireguard_psk"] = labels.WireGuardPsk,
        };

        // Every label the vectors list is checked (no label silently skipped).
        Assert.Equal(expected.EnumerateObject().Select(p => p.Name).Order(), actual.Keys.Order());
        foreach (var (name, domain) in actual)
        {
            Assert.True(expected.GetProperty(name).GetProperty("hex").GetString() == Hex(domain.Value), $"label {name} ({version})");
        }
    }

    [Fact]
    public void ProtocolIdentifiers_AreUpstreams()
    {
        var ids = Root.GetProperty("protocol_identifier");
        Assert.Equal(ids.GetProperty("V02_blake2b").GetString(), Labels.ProtocolIdentifier(ProtocolVersion.V02));
        Assert.Equal(ids.GetProperty("V03_shake256").GetString(), Labels.ProtocolIdentifier(ProtocolVersion.V03));
    }

    [Fact]
    public void CookieLabels_AreAlwaysTheShake256Ones()
    {
        Assert.Equal(ProtocolVersion.V03, Labels.CookieLabels.Version);
        Assert.NotEqual(Hex(Labels.For(ProtocolVersion.V02).Cookie.Value), Hex(Labels.CookieLabels.Cookie.Value));
    }

    [Theory]
    [InlineData(ProtocolVersion.V02, "V02")]
    [InlineData(ProtocolVersion.V03, "V03")]
    public void CustomOutputSeparator_MatchesTheWhitepaperExample(ProtocolVersion version, string vectorName)
    {
        var example = Root.GetProperty("hash_domain_values").GetProperty("custom_osk_separator_example");
        var separator = Labels.For(version).CustomOutputSeparator(
            example.GetProperty("namespace").GetString()!,
            example.GetProperty("labels").EnumerateArray().Select(l => l.GetString()!).ToList());
        Assert.Equal(example.GetProperty(vectorName).GetString(), Hex(separator.Value));
        Assert.Throws<ArgumentException>(() => Labels.For(version).CustomOutputSeparator("myorg.com", []));
    }

    [Fact]
    public void HashDomain_NeverPrintsItsValue()
    {
        var text = Labels.For(ProtocolVersion.V03).WireGuardPsk.ToString();
        Assert.DoesNotContain(Hex(Labels.For(ProtocolVersion.V03).WireGuardPsk.Value), text, StringComparison.OrdinalIgnoreCase);
    }
}
