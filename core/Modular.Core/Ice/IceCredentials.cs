using System.Security.Cryptography;

namespace Modular.Core.Ice;

/// <summary>
/// One side's check credentials (ICE's ufrag/pwd): the ufrag names the session in every check, the
/// password keys the checks' HMAC so only someone who received it over (end-to-end encrypted) signal
/// can make a check we answer or an answer we accept.
/// </summary>
public sealed record IceCredentials(string Ufrag, string Password)
{
    private const string Alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

    public static IceCredentials Generate() => new(RandomToken(8), RandomToken(24));

    private static string RandomToken(int length) => RandomNumberGenerator.GetString(Alphabet, length);

    /// <summary>Credentials as received from a peer are used only when they look like ours.</summary>
    public static bool IsWellFormed(string ufrag, string password)
        => ufrag.Length is >= 4 and <= 32 && password.Length is >= 16 and <= 64
           && ufrag.All(c => Alphabet.Contains(c, StringComparison.Ordinal))
           && password.All(c => Alphabet.Contains(c, StringComparison.Ordinal));

    public override string ToString() => $"ufrag {Ufrag} pwd (hidden)";
}
