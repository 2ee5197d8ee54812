using System.Security.Cryptography;
using Modular.Control.Management;

namespace Modular.Control.Relay;

/// <summary>
/// What an agent binds at the relay with, as management issued it in the sealed Login/Sync reply: the v1 token
/// (for the old Bind form), the v2 per-token secret (empty from a server of the previous release) and their expiry.
/// The secret never leaves the agent: Binds carry only a MAC under it.
/// </summary>
public sealed class RelayCredentials
{
    public RelayCredentials(byte[] token, byte[] secret, long expiresUnix)
    {
        Token = token;
        Secret = secret;
        ExpiresUnix = expiresUnix;
    }

    /// <summary>The v1 token (<see cref="RelayToken.Size"/> bytes).</summary>
    public byte[] Token { get; }

    /// <summary>The v2 per-token secret (<see cref="RelayToken.SecretSize"/> bytes), or empty: then the old Bind form is used.</summary>
    public byte[] Secret { get; }

    /// <summary>When both expire, Unix seconds.</summary>
    public long ExpiresUnix { get; }

    /// <summary>Binds are signed (v2); false: the old, replayable form.</summary>
    public bool Signed => Secret.Length == RelayToken.SecretSize;

    /// <summary>Only the old form: a v1 token and nothing else (what a server of the previous release hands out).</summary>
    public static RelayCredentials Legacy(byte[] token) => new(token, [], RelayToken.ExpiresOf(token));

    /// <summary>The credentials in a Login/Sync reply; null when it carries no usable token.</summary>
    public static RelayCredentials? From(ServiceAddresses services)
    {
        ArgumentNullException.ThrowIfNull(services);
        var token = services.RelayToken.ToByteArray();
        var secret = services.RelaySecret.ToByteArray();
        if (token.Length != RelayToken.Size && secret.Length != RelayToken.SecretSize)
        {
            return null;
        }

        var expires = services.RelayTokenExpiresUnix != 0 ? services.RelayTokenExpiresUnix : RelayToken.ExpiresOf(token);
        return new RelayCredentials(token, secret.Length == RelayToken.SecretSize ? secret : [], expires);
    }

    /// <summary>Never prints the secret.</summary>
    public override string ToString() => $"relay credentials ({(Signed ? "signed" : "old form")}, expire {DateTimeOffset.FromUnixTimeSeconds(ExpiresUnix):u})";

    /// <summary>Equal content (a Sync reply that repeats the credentials held changes nothing).</summary>
    public bool SameAs(RelayCredentials? other) => other is not null && other.ExpiresUnix == ExpiresUnix
        && CryptographicOperations.FixedTimeEquals(other.Token, Token) && CryptographicOperations.FixedTimeEquals(other.Secret, Secret);
}
