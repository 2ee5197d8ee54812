namespace Modular.Plugins.Rosenpass.Protocol;

/// <summary>
/// Rosenpass's hash-domain labels for one protocol version, derived exactly as upstream's
/// hash_domains.rs does: protocol = H(0, PROTOCOL), each label = H(parent, "name"). The
/// derived values, not the strings, enter the protocol. The protocol identifiers are upstream's,
/// kept verbatim (V02 says BLAKE2s although BLAKE2b is used, and both say Kyber512 while our
/// ephemeral KEM will be ML-KEM-512) because changing a single byte would change every value.
/// The cookie labels always come from the V03 (SHAKE256) tree, as upstream's do.
/// </summary>
internal sealed class Labels
{
    /// <summary>Upstream's protocol identifier for V02 (the BLAKE2s erratum is upstream's and must stay).</summary>
    public const string ProtocolIdentifierV02 = "Rosenpass v1 mceliece460896 Kyber512 ChaChaPoly1305 BLAKE2s";

    /// <summary>Upstream's protocol identifier for V03.</summary>
    public const string ProtocolIdentifierV03 = "Rosenpass v1 mceliece460896 Kyber512 ChaChaPoly1305 SHAKE256";

    private static readonly Lazy<Labels> LabelsV02 = new(() => new Labels(ProtocolVersion.V02));
    private static readonly Lazy<Labels> LabelsV03 = new(() => new Labels(ProtocolVersion.V03));

    private Labels(ProtocolVersion version)
    {
        Version = version;
        Protocol = HashDomain.Zero(version).Mix(ProtocolIdentifier(version));
        Mac = Protocol.Mix("mac");
        Cookie = Protocol.Mix("cookie");
        CookieValue = Protocol.Mix("cookie-value");
        CookieKey = Protocol.Mix("cookie-key");
        PeerId = Protocol.Mix("peer id");
        BiscuitAd = Protocol.Mix("biscuit additional data");
        CkInit = Protocol.Mix("chaining key init");
        CkExtract = Protocol.Mix("chaining key extract");
        Mix = CkExtract.Mix("mix");
        HandshakeEncryption = CkExtract.Mix("handshake encryption");
        InitiatorEncryption = CkExtract.Mix("initiator handshake encryption");
        ResponderEncryption = CkExtract.Mix("responder handshake encryption");
        User = CkExtract.Mix("user");
        UserRosenpassEu = User.Mix("rosenpass.eu");
        WireGuardPsk = UserRosenpassEu.Mix("wireguard psk");
    }

    /// <summary>The version these labels belong to.</summary>
    public ProtocolVersion Version { get; }

    public HashDomain Protocol { get; }
    public HashDomain Mac { get; }
    public HashDomain Cookie { get; }
    public HashDomain CookieValue { get; }
    public HashDomain CookieKey { get; }
    public HashDomain PeerId { get; }
    public HashDomain BiscuitAd { get; }
    public HashDomain CkInit { get; }
    public HashDomain CkExtract { get; }
    public HashDomain Mix { get; }
    public HashDomain HandshakeEncryption { get; }
    public HashDomain InitiatorEncryption { get; }
    public HashDomain ResponderEncryption { get; }
    public HashDomain User { get; }
    public HashDomain UserRosenpassEu { get; }

    /// <summary>The default output-key separator: the WireGuard PSK.</summary>
    public HashDomain WireGuardPsk { get; }

    /// <summary>The labels of <paramref name="version"/> (computed once per process).</summary>
    public static Labels For(ProtocolVersion version) => version switch
    {
        ProtocolVersion.V02 => LabelsV02.Value,
        ProtocolVersion.V03 => LabelsV03.Value,
        _ => throw new ArgumentOutOfRangeException(nameof(version), version, "Unknown Rosenpass protocol version."),
    };

    /// <summary>The labels the envelope cookie and CookieReply use whatever the peer's version: always SHAKE256.</summary>
    public static Labels CookieLabels => For(ProtocolVersion.V03);

    /// <summary>Upstream's protocol identifier string for <paramref name="version"/>.</summary>
    public static string ProtocolIdentifier(ProtocolVersion version) => version switch
    {
        ProtocolVersion.V02 => ProtocolIdentifierV02,
        ProtocolVersion.V03 => ProtocolIdentifierV03,
        _ => throw new ArgumentOutOfRangeException(nameof(version), version, "Unknown Rosenpass protocol version."),
    };

    /// <summary>
    /// A custom output-key separator (upstream's OskDomainSeparator::Custom):
    /// H(...H(H(user, namespace), label1)..., labelN). At least one label is required.
    /// </summary>
    public HashDomain CustomOutputSeparator(string @namespace, IReadOnlyList<string> labels)
    {
        ArgumentException.ThrowIfNullOrEmpty(@namespace);
        if (labels.Count == 0)
        {
            throw new ArgumentException("A custom output-key separator needs at least one label.", nameof(labels));
        }

        var domain = User.Mix(@namespace);
        foreach (var label in labels)
        {
            domain = domain.Mix(label);
        }

        return domain;
    }
}
